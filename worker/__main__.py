from reseller_webhooks.worker.cli.entry import main

main()
