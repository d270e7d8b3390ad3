package archive

// AppData is the member application_data.json of a full backup: database
// statistics and the sanitized configuration at backup time. A restore
// reads each database's encoding, locale and owner from it.
type AppData struct {
	Databases     map[string]DatabaseStats `json:"databases"`
	Configuration map[string]string        `json:"configuration"`
}

// DatabaseStats describes one database at backup time.
type DatabaseStats struct {
	SizeBytes int64       `json:"sizeBytes"`
	Encoding  string      `json:"encoding"`
	Collate   string      `json:"collate"`
	Ctype     string      `json:"ctype"`
	Owner     string      `json:"owner"`
	Tables    []TableStat `json:"tables"`
}

// TableStat is one table's size and row estimate in application_data.json.
type TableStat struct {
	Schema    string `json:"schema"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	SizeBytes int64  `json:"sizeBytes"`
	RowsEst   int64  `json:"rowsEstimate"`
}
