// Package migrations embeds the SQL migrations of CML Cloud Manager's own
// tables: the Postgres event store, read models, checkpoints and sessions.
// River's tables come from rivermigrate. Files are applied in order by goose;
// each file is one version and never changes once released.
package migrations

import "embed"

// FS holds the migration files (NNNNN_name.sql).
//
//go:embed *.sql
var FS embed.FS
