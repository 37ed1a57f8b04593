from worker.console import main

main()
