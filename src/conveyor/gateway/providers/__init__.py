"""The gateway's providers, one module per kind of upstream (see ``docs/gateway.md``)."""
