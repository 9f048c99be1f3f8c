"""Partners: onboarding (Kafka principal and ACLs, topic, OIDC client, webhook endpoint) and
the fan-out of each partner's events to its own topic."""
