"""CreditBot's domain: credit-control rules as pure functions and small dataclasses.

Nothing in this package (outside ``credit.store``) talks to a database, a chat platform,
a scheduler or the network. ``credit.store`` is the storage adapter: SQLModel tables,
migrations and session-taking service functions.
"""
