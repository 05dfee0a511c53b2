-- Rollback of 20240000000004_hardening. Idempotent. Changes nothing, on purpose.
--
-- 20240000000004 only brings a database set up by 0.1.0 to what 20240000000001..03
-- install today; every object, grant, policy and check it (re)creates is also
-- created by 01..03, with the same definition. After this rollback the database is
-- therefore exactly as a fresh 01..03 leaves it, which is what it already is. The
-- objects go with the rollbacks of 01..03 (20240000000001's drops
-- presence_prune_job_history and presence_config with its checks and policy).
--
-- 0.1.0's weaker definitions are deliberately not restored: they let users forge their
-- heartbeat on a hand-made users table, among other holes (issue 11). To leave
-- presence_sdk entirely: presence-sdk rollback --to 0 (runs 04, 03, 02, 01).
SET lock_timeout = '5s';
SET statement_timeout = '60s';
