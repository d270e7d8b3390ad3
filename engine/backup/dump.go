package backup

import "strconv"

// dumpArgs builds pg_dump's arguments for a directory-format dump of the
// database named by PGDATABASE. pg_dump writes uncompressed data: the archive
// codec (or, for xz, compressTableData) compresses it in parallel, where
// pg_dump would compress each table in a single thread.
func dumpArgs(dir string, jobs int, snapshot string) []string {
	args := []string{"-w", "--format=directory", "--compress=0", "--jobs=" + strconv.Itoa(jobs), "--file=" + dir}
	if snapshot != "" {
		args = append(args, "--snapshot="+snapshot)
	}
	return args
}
