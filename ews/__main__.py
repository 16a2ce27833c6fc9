from ews.cli import main

main()
