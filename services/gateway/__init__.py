"""The gateway: authenticates agencies, asks agreements for a decision, audits and proxies."""
