package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// hashedPrefix starts the object name of a key that cannot be its own
// object name.
const hashedPrefix = "h."

// objectName maps a volume id, volume name or node id to the name of its
// object. A key that is a valid object name (a lowercase DNS subdomain,
// as every id NewVolumeID makes and every Kubernetes node name is) and
// does not start with hashedPrefix is its own object name, so that
// kubectl shows it. Any other key (CSI names and ids may hold upper case
// and any UTF-8) is hashedPrefix and the hex SHA-256 of the key. The two
// forms cannot meet, since only hashed names start with hashedPrefix; the
// objects also keep their key, and the store checks it on every read.
func objectName(key string) string {
	if len(validation.IsDNS1123Subdomain(key)) == 0 && !strings.HasPrefix(key, hashedPrefix) {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return hashedPrefix + hex.EncodeToString(sum[:])
}

// VolumeObjectName returns the name of the TriremeVolume of the volume
// with the id.
func VolumeObjectName(id string) string { return objectName(id) }
