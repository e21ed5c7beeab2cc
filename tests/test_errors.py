"""The error tree: one root, stable codes, one JSON shape that round-trips."""

from __future__ import annotations

from venice import errors


class TestErrorTree:
    def test_every_error_derives_from_the_root(self) -> None:
        for name in errors.__all__:
            obj = getattr(errors, name)
            if isinstance(obj, type):
                assert issubclass(obj, errors.VeniceError), name

    def test_codes_are_unique(self) -> None:
        classes = [getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)]
        codes = [c.code for c in classes]
        assert len(codes) == len(set(codes))

    def test_json_shape_round_trips_to_the_same_class(self) -> None:
        exc = errors.StoreNotFoundError("store 'x' does not exist")
        again = errors.error_from_response(404, errors.error_body(exc))
        assert type(again) is errors.StoreNotFoundError
        assert again.message == exc.message

    def test_flags_drive_failover(self) -> None:
        assert errors.ReplicaNotReadyError.retriable and errors.ReplicaNotReadyError.refresh_routing
        assert not errors.KeyNotFoundError.retriable
        assert not errors.InvalidKeyError.retriable

    def test_non_json_5xx_is_retriable(self) -> None:
        exc = errors.error_from_response(502, b"<html>bad gateway</html>")
        assert exc.retriable
