-- +goose Up
-- Placeholder replaced by the event store migration.
SELECT 1;

-- +goose Down
SELECT 1;
