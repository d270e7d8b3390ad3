package backup

import "strconv"

// dumpArgs builds pg_dump's arguments for a directory-format dump of the
// database named by PGDATABASE. Compression is left to the archive codec.
func dumpArgs(dir string, jobs int, snapshot string) []string {
	args := []string{"-w", "--format=directory", "--compress=0", "--jobs=" + strconv.Itoa(jobs), "--file=" + dir}
	if snapshot != "" {
		args = append(args, "--snapshot="+snapshot)
	}
	return args
}
