// Package pgharness is a reusable PostgreSQL test harness for pme2go-backup.
//
// It starts throwaway PostgreSQL clusters (fast: a template data directory
// produced by initdb is cached and copied per cluster), loads deterministic
// "awkward" and bulk datasets, and compares the logical content of two
// databases with order-independent per-table checksums.
//
// Environment variables:
//
//   - PME2GO_TEST_REQUIRE: "all" or a comma separated list of requirement
//     names (for example "postgres,pg_dump"); a missing requirement listed
//     there fails the test instead of skipping it.
//   - PME2GO_PG_BINDIR: PostgreSQL server bin directory to use.
//   - PME2GO_TEST_KEEP=1: keep cluster directories after the test.
//   - PME2GO_TEST_NO_TEMPLATE=1: run initdb for every cluster instead of
//     copying the cached template.
//
// When the tests run as root, the cluster lives in a directory owned by the
// postgres user and initdb/pg_ctl run with that user's credentials.
package pgharness
