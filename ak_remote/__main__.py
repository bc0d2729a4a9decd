from ak_remote.cli import main

main()
