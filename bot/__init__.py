"""CreditBot's edges: the command line, chat apps (Slack, Telegram) and the HTTP app."""
