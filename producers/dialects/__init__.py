"""The four API dialects of the seeds, each a thin translation onto the shared core.

- ``rest_create``: ``POST /v3/resellers/{resellerId}/users`` -> ``reseller.user.created``
- ``rest_update``: ``PATCH /v3/resellers/{resellerId}/users/{id}`` -> ``reseller.user.updated``
- ``json_patch``: ``PATCH /v1.0/accounts/{tenant}/users/{user}`` -> ``reseller.user.updated``
- ``graphql``: the ``resellerEditUser`` mutation -> ``reseller.user.updated``

Field maps and examples: docs/dialects.md.
"""
