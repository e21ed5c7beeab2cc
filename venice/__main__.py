from venice.cli import main

main()
