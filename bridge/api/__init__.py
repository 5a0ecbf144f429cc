"""The HTTP API, one concern a module.

- ``app``: the application factory; every route is registered there.
- ``judging``: judging one message (number, text, segments, priority,
  ``date_to_send``, tracked-link placeholders, the ``#00x`` codes). Pure.
- ``bodies`` (reading requests), ``auth`` (whose request it is),
  ``errors`` (refusals and code tables), ``envelope`` (how answers are written).
- One module per dialect: ``insim`` (sendsms, contact, clicTocall,
  qualification), ``ardary`` (its older form), ``notimation`` (the read side),
  ``codes`` (SMSFLOW-style verification codes; the code itself: ``verification``).
- ``links`` (tracked links), ``ops`` (health, OpenAPI, metrics, devices,
  simulate, recheck), ``openapi`` (the document), ``workers`` (a second core
  for bulk batches).
- ``views`` (what the API asks of the daemon), ``_store`` (what it asks of the
  store: the only module here that imports ``bridge.store``), ``settings``
  (the configuration of the moment).
"""
