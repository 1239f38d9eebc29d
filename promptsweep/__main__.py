from promptsweep.cli import main

main()
