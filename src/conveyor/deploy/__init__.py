"""From a laptop to a cluster: environments, the image recipe, the Helm chart, smoke tests,
promotion between environments and CI/CD templates.

- :mod:`conveyor.deploy.settings`: the ``deploy:`` section (image, Kubernetes);
  environments themselves are the foundation's (``environments:`` in
  :mod:`conveyor.config`), since ``--env`` applies to every command.
- :mod:`conveyor.deploy.image`: ``conveyor build`` (Dockerfile, locked requirements,
  docker-compose).
- :mod:`conveyor.deploy.helm`: the chart ``deploy/helm/conveyor`` rendered by Helm's own
  engine, validated against the Kubernetes schemas and the policy checks.
- :mod:`conveyor.deploy.smoke`: ``conveyor smoke --env NAME``.
- :mod:`conveyor.deploy.promotion`: ``conveyor promote`` across environments.
- :mod:`conveyor.deploy.ci`: ``conveyor ci init --provider github|gitlab``.
"""
