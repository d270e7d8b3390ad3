package crypt

import (
	"fmt"
	"os"
	"path/filepath"

	"filippo.io/age"
)

// TestKeys writes a fresh X25519 identity file and its recipients file into
// dir (mode 0600) and returns their paths. Tests and benchmarks use it; a
// real installation makes its keys with age-keygen.
func TestKeys(dir, name string) (recipients, identity string, err error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", "", fmt.Errorf("generate age identity: %w", err)
	}
	identity = filepath.Join(dir, name+".key")
	recipients = filepath.Join(dir, name+".pub")
	if err := os.WriteFile(identity, []byte("# test identity\n"+id.String()+"\n"), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(recipients, []byte("# test recipient\n"+id.Recipient().String()+"\n"), 0o600); err != nil {
		return "", "", err
	}
	return recipients, identity, nil
}
