package streams

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/memmie/memmie/events"
)

// SubjectBlobPartitions is the filter of every blob event stored since MEMMIE_BLOBS is
// partitioned: memmie.blobs.<partition>.<blob_id>.<kind> (see Configs).
const SubjectBlobPartitions = "memmie.blobs.*.*.*"

// BlobsTransform returns the subject transform of MEMMIE_BLOBS: an event published to
// memmie.blobs.<blob_id>.<kind> is stored as memmie.blobs.<partition>.<blob_id>.<kind>, where
// partition is the server's partition() hash of the blob id, over the same number of
// partitions as the inbox (Options.Partitions).
func BlobsTransform(opts Options) *jetstream.SubjectTransformConfig {
	return &jetstream.SubjectTransformConfig{
		Source:      events.SubjectBlobs,
		Destination: fmt.Sprintf("memmie.blobs.{{partition(%d,1)}}.{{wildcard(1)}}.{{wildcard(2)}}", opts.partitions()),
	}
}

// BlobPartitionFilter returns the filter of one partition's blob events:
// memmie.blobs.<partition>.*.*.
func BlobPartitionFilter(partition int) string {
	return "memmie.blobs." + strconv.Itoa(partition) + ".*.*"
}

// ParseBlobPartitionSubject splits memmie.blobs.<partition>.<blob_id>.<kind>, the subject a
// blob event is stored under, and returns the subject it was published to,
// memmie.blobs.<blob_id>.<kind>.
func ParseBlobPartitionSubject(subject string) (partition int, published string, err error) {
	t := strings.Split(subject, ".")
	if len(t) != 5 || t[0] != "memmie" || t[1] != "blobs" {
		return 0, "", fmt.Errorf("parse blob subject %q: want memmie.blobs.<partition>.<blob_id>.<kind>", subject)
	}
	partition, err = strconv.Atoi(t[2])
	if err != nil || partition < 0 || strconv.Itoa(partition) != t[2] {
		return 0, "", fmt.Errorf("parse blob subject %q: partition %q is not a number", subject, t[2])
	}
	if err := events.ValidToken(t[3]); err != nil {
		return 0, "", fmt.Errorf("parse blob subject %q: blob id: %w", subject, err)
	}
	// The kind is left to the handler, which dead-letters an unknown one with its reason.
	if err := events.ValidToken(t[4]); err != nil {
		return 0, "", fmt.Errorf("parse blob subject %q: kind: %w", subject, err)
	}
	return partition, "memmie.blobs." + t[3] + "." + t[4], nil
}
