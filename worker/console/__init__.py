"""The operator console: a small server-rendered web app (Tornado) over the same records and the
same code as the command line (``reseller_webhooks.worker.ops.actions``).

``app`` builds and serves it, ``routes`` maps its addresses to its pages and actions
(``login``, ``subscribers``, ``dead_letters``, ``lookup``), ``handlers`` holds what they share,
``auth`` who may use it, ``views`` how things are shown; ``templates/`` and ``static/`` are its
HTML and CSS. No JavaScript is needed: pages are tables and forms.
"""
