"""fedrisk on Flower's deployment engine: SuperLink + one SuperNode per holder, started by ``flwr run``.

- `fedrisk.federation.deploy.apps`: the ServerApp/ClientApp that ``[tool.flwr.app.components]`` names; they run the
  same vertical and horizontal apps as the simulation, chosen by the run config.
- `fedrisk.federation.deploy.certificates`: a throw-away CA and server certificate for TLS (and SuperNode keys).
- `fedrisk.federation.deploy.prepare`: each holder's table, the label holder's plan and the run config, from an
  experiment config; and the outcome from the ServerApp's output directory.
- `fedrisk.federation.deploy.loopback`: everything on 127.0.0.1, for CI and for trying the deployment path locally.
"""
