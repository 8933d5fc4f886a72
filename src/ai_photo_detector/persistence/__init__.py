"""The database: the prediction log, feedback, drift history, alerts and audit events, one
module per table family, with their migrations."""
