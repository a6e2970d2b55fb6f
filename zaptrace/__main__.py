from zaptrace.cli import main

main()
