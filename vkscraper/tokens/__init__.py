"""Access tokens: reading them, the pool that spreads requests over them, where they may be
sent, and keeping them out of logs."""
