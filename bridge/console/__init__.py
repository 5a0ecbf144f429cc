"""The web console at ``/console`` (docs/console.md)."""
