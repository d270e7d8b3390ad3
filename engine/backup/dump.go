package backup

import "strconv"

// dumpArgs builds pg_dump's arguments for a directory-format dump of the
// database named by PGDATABASE. level is pg_dump's own gzip level for table
// data (0: none, the archive codec compresses everything). With the xz codec
// pg_dump compresses each table in its parallel workers and the archive
// stores those .dat.gz members without recompressing them: the pure-Go LZMA
// encoder is several times slower than pg_dump's zlib and compresses this
// data no better (docs/benchmarks.md).
func dumpArgs(dir string, jobs, level int, snapshot string) []string {
	args := []string{"-w", "--format=directory", "--compress=" + strconv.Itoa(level), "--jobs=" + strconv.Itoa(jobs), "--file=" + dir}
	if snapshot != "" {
		args = append(args, "--snapshot="+snapshot)
	}
	return args
}

// dumpCompression returns pg_dump's compression level for the archive codec.
func dumpCompression(codec string, level int) int {
	if codec == "xz" {
		return level
	}
	return 0
}
