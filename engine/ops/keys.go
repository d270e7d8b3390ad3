package ops

import (
	"sort"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/crypt"
)

// EncryptionStatus says which keys the kept archives need: Status fills it
// when encryption is configured or any archive is encrypted.
type EncryptionStatus struct {
	// Enabled: BACKUP_ENCRYPTION_RECIPIENTS is set (new archives are encrypted).
	Enabled bool `json:"enabled"`
	// Recipients are the fingerprints of the current recipients.
	Recipients []string `json:"recipients"`
	// RecipientsError says why the recipients file cannot be used.
	RecipientsError string `json:"recipientsError,omitempty"`
	// Encrypted and Plaintext count the kept archives of each kind.
	Encrypted int `json:"encrypted"`
	Plaintext int `json:"plaintext"`
	// NeedRekey counts encrypted archives whose recipients are not exactly
	// the current ones (rekey re-encrypts them).
	NeedRekey int `json:"needRekey"`
	// Keys lists every key a kept archive is encrypted to.
	Keys []KeyUse `json:"keys"`
}

// KeyUse is one recipient key and the kept archives encrypted to it.
type KeyUse struct {
	Fingerprint string `json:"fingerprint"`
	// Key is the public key as in the recipients file.
	Key string `json:"key"`
	// Current: the key is in the current recipients file.
	Current bool `json:"current"`
	// Archives counts the kept archives encrypted to it.
	Archives int `json:"archives"`
	// NeededBy counts the archives no current key opens that this key opens:
	// a retired key with NeededBy > 0 must not be destroyed before rekey.
	NeededBy int `json:"neededBy"`
}

// encryptionStatus summarises the keys of the archives in all.
func encryptionStatus(all []catalog.Backup) *EncryptionStatus {
	s := &EncryptionStatus{Enabled: crypt.Enabled(), Recipients: []string{}, Keys: []KeyUse{}}
	current := map[string]bool{}
	var curKeys []string
	if s.Enabled {
		if rec, err := crypt.LoadRecipients(); err != nil {
			s.RecipientsError = err.Error()
		} else {
			s.Recipients, curKeys = rec.Fingerprints(), rec.Keys
			for _, k := range rec.Keys {
				current[k] = true
			}
		}
	}
	uses := map[string]*KeyUse{}
	for _, b := range all {
		if !archive.IsEncryptedName(b.Name) {
			s.Plaintext++
			continue
		}
		s.Encrypted++
		var keys []string
		if b.Manifest != nil && b.Manifest.Archive != nil && b.Manifest.Archive.Encryption != nil {
			keys = b.Manifest.Archive.Encryption.Recipients
		}
		if !crypt.SameKeys(keys, curKeys) {
			s.NeedRekey++
		}
		opensNow := false
		for _, k := range keys {
			opensNow = opensNow || current[k]
		}
		for _, k := range keys {
			u := uses[k]
			if u == nil {
				u = &KeyUse{Fingerprint: crypt.Fingerprint(k), Key: k, Current: current[k]}
				uses[k] = u
			}
			u.Archives++
			if !opensNow {
				u.NeededBy++
			}
		}
	}
	if !s.Enabled && s.Encrypted == 0 {
		return nil
	}
	for _, u := range uses {
		s.Keys = append(s.Keys, *u)
	}
	sort.Slice(s.Keys, func(i, j int) bool {
		if s.Keys[i].Current != s.Keys[j].Current {
			return s.Keys[i].Current
		}
		return s.Keys[i].Key < s.Keys[j].Key
	})
	return s
}

// checkRecipients refuses to start a backup whose archive could not be
// encrypted (BACKUP_ENCRYPTION_RECIPIENTS set but unreadable or empty),
// before anything is dumped or captured.
func checkRecipients() error {
	if !crypt.Enabled() {
		return nil
	}
	_, err := crypt.LoadRecipients()
	return err
}
