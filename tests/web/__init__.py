"""Browser tests of the web dashboard. A package, so its helpers import the same way
under pytest and under `mypy gateway/web tests/web` as under the project-wide mypy."""
