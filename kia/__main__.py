from kia.cli import main

main()
