"""The controller object on a real embedded log and metadata file: the topic janitor never
deletes a live version's topic (issue 8, item 1), and a change that cannot be serialized
is undone (item 4; the disk case is in test_app.py, on a real process)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from controller.app import Controller
from controller.persistence import MetadataFile
from venice.errors import UnavailableError
from venice.pubsub import connect

VALUE_SCHEMA = {"type": "record", "name": "V", "fields": [{"name": "x", "type": "long"}]}


async def test_the_janitor_never_deletes_a_live_versions_topic(tmp_path: Path) -> None:
    pubsub = connect(f"embedded://{tmp_path / 'log'}")
    controller = Controller(MetadataFile(tmp_path / "controller"), pubsub)
    try:
        state = controller.state
        state.heartbeat("s0", "http://127.0.0.1:9", [], now=100.0)
        state.create_store("members", "long", VALUE_SCHEMA, 2, 1)
        live = state.open_version("members", now=100.0)
        for topic in (live.topic, "members_v0", "gone_v7"):
            await pubsub.create_topic(topic, 2)
        # As if metadata had gone wrong: the live version's topic is on the deletion list.
        state.topics_to_delete |= {live.topic, "members_v0", "gone_v7"}
        await controller.topics_once()
        assert await pubsub.list_topics() == {live.topic}
        assert controller.state.topics_to_delete == set()
        # Saved: a restarted controller does not try again either.
        assert MetadataFile(tmp_path / "controller").load(pubsub.url, 15.0).topics_to_delete == set()
    finally:
        await pubsub.close()


async def test_a_change_that_does_not_serialize_is_undone(tmp_path: Path) -> None:
    pubsub = connect(f"embedded://{tmp_path / 'log'}")
    controller = Controller(MetadataFile(tmp_path / "controller"), pubsub)
    try:
        controller.state.create_store("members", "long", VALUE_SCHEMA, 2, 1)
        controller.commit()
        generation = controller.state.generation
        # Whatever slipped past validation (here: an integer beyond 64 bits) must not stick.
        controller.state.store("members").value_schemas[2] = {"type": "long", "size": 10**30}
        controller.state.dirty = True
        with pytest.raises(UnavailableError, match="could not save the change, so it was not made"):
            controller.commit()
        assert list(controller.state.store("members").value_schemas) == [1]
        assert controller.state.generation > generation and not controller.state.dirty
        saved = orjson.loads((tmp_path / "controller" / "controller-state.json").read_bytes())
        assert [list(s["value_schemas"]) for s in saved["stores"]] == [["1"]]
        # The next change works.
        controller.state.create_store("other", "long", VALUE_SCHEMA, 2, 1)
        controller.commit()
        assert set(MetadataFile(tmp_path / "controller").load(pubsub.url, 15.0).stores) == {"members", "other"}
    finally:
        await pubsub.close()
