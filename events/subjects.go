package events

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Subject filters of the streams (see the streams subpackage).
const (
	SubjectBlobs       = "memmie.blobs.*.*"       // memmie.blobs.<blob_id>.<kind>
	SubjectExecutions  = "memmie.executions.>"    // memmie.executions.<execution_id>.<tail...>
	SubjectDeltas      = "memmie.deltas.*"        // memmie.deltas.<blob_id>
	SubjectDefinitions = "memmie.definitions.*.*" // memmie.definitions.<kind>s.<id>
	SubjectDeadLetter  = "memmie.deadletter.>"    // memmie.deadletter.<source>
	SubjectInbox       = "memmie.inbox.*"         // memmie.inbox.<execution_id>
)

// EngineInboxPrefix is the reply prefix of memmie's own NATS connections (nats.CustomInboxPrefix):
// replies to the engine, pulled inbox commands among them, go to EngineInboxPrefix + ".>",
// which nats.conf lets only the engine subscribe to, rather than to _INBOX.>, which clients
// may subscribe to.
const EngineInboxPrefix = "_INBOX_memmie"

// ExecutionIDToken is the index of the execution id among an execution subject's tokens, for
// partitioning by execution.
const ExecutionIDToken = 2

// executionTypePrefix is cut from an execution event's type to make its subject's tail.
const executionTypePrefix = "memmie.execution."

// MaxTokenLength bounds an id used as a subject token.
const MaxTokenLength = 256

// ValidToken checks that s can be one subject token: not empty, at most MaxTokenLength bytes of
// UTF-8, and free of '.', '*', '>', whitespace and control characters.
func ValidToken(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > MaxTokenLength:
		return fmt.Errorf("%d bytes, at most %d allowed", len(s), MaxTokenLength)
	case !utf8.ValidString(s):
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%q contains %q, which a subject token cannot", s, r)
		}
	}
	return nil
}

// BlobSubject returns memmie.blobs.<blob_id>.<kind>.
func BlobSubject(blobID string, kind BlobKind) (string, error) {
	if err := ValidToken(blobID); err != nil {
		return "", fmt.Errorf("blob subject: blob id: %w", err)
	}
	if !kind.valid() {
		return "", fmt.Errorf("blob subject: unknown kind %q", kind)
	}
	return "memmie.blobs." + blobID + "." + string(kind), nil
}

// ParseBlobSubject splits memmie.blobs.<blob_id>.<kind>.
func ParseBlobSubject(subject string) (blobID string, kind BlobKind, err error) {
	t := strings.Split(subject, ".")
	if len(t) != 4 || t[0] != "memmie" || t[1] != "blobs" {
		return "", "", fmt.Errorf("parse blob subject %q: want memmie.blobs.<blob_id>.<kind>", subject)
	}
	if err := ValidToken(t[2]); err != nil {
		return "", "", fmt.Errorf("parse blob subject %q: blob id: %w", subject, err)
	}
	if kind = BlobKind(t[3]); !kind.valid() {
		return "", "", fmt.Errorf("parse blob subject %q: unknown kind %q", subject, t[3])
	}
	return t[2], kind, nil
}

// ExecutionSubject returns the subject of an execution event:
// memmie.executions.<execution_id>.<tail>, where tail is the type without "memmie.execution."
// (memmie.executions.<id>.step.scheduled for memmie.execution.step.scheduled).
func ExecutionSubject(executionID string, t Type) (string, error) {
	if err := ValidToken(executionID); err != nil {
		return "", fmt.Errorf("execution subject: execution id: %w", err)
	}
	if !t.IsExecution() {
		return "", fmt.Errorf("execution subject: %q is not an execution event type", t)
	}
	return executionSubject(executionID, t), nil
}

func executionSubject(executionID string, t Type) string {
	return "memmie.executions." + executionID + "." + strings.TrimPrefix(string(t), executionTypePrefix)
}

// ExecutionFilter returns the filter of one execution's subjects: memmie.executions.<id>.>.
func ExecutionFilter(executionID string) string { return "memmie.executions." + executionID + ".>" }

// InboxSubject returns memmie.inbox.<execution_id>, where the inputs of an execution arrive as
// commands for the one writer of its history (see docs/architecture.md).
func InboxSubject(executionID string) string { return "memmie.inbox." + executionID }

// ParseInboxSubject returns the execution id of memmie.inbox.<execution_id>.
func ParseInboxSubject(subject string) (string, error) {
	t := strings.Split(subject, ".")
	if len(t) != 3 || t[0] != "memmie" || t[1] != "inbox" {
		return "", fmt.Errorf("parse inbox subject %q: want memmie.inbox.<execution_id>", subject)
	}
	if err := ValidToken(t[2]); err != nil {
		return "", fmt.Errorf("parse inbox subject %q: execution id: %w", subject, err)
	}
	return t[2], nil
}

// ParseExecutionSubject splits memmie.executions.<execution_id>.<tail>, where tail is an event
// type's tail (step.scheduled; TypeOfTail maps it back).
func ParseExecutionSubject(subject string) (executionID, tail string, err error) {
	t := strings.SplitN(subject, ".", 4)
	if len(t) != 4 || t[0] != "memmie" || t[1] != "executions" || t[3] == "" {
		return "", "", fmt.Errorf("parse execution subject %q: want memmie.executions.<execution_id>.<tail>", subject)
	}
	if err := ValidToken(t[2]); err != nil {
		return "", "", fmt.Errorf("parse execution subject %q: execution id: %w", subject, err)
	}
	return t[2], t[3], nil
}

// TypeOfTail returns the execution event type whose subject ends in tail, or false.
func TypeOfTail(tail string) (Type, bool) {
	t := Type(executionTypePrefix + tail)
	return t, t.IsExecution()
}

// DeltaSubject returns memmie.deltas.<blob_id>.
func DeltaSubject(blobID string) (string, error) {
	if err := ValidToken(blobID); err != nil {
		return "", fmt.Errorf("delta subject: blob id: %w", err)
	}
	return "memmie.deltas." + blobID, nil
}

// ParseDeltaSubject returns the blob id of memmie.deltas.<blob_id>.
func ParseDeltaSubject(subject string) (string, error) {
	t := strings.Split(subject, ".")
	if len(t) != 3 || t[0] != "memmie" || t[1] != "deltas" {
		return "", fmt.Errorf("parse delta subject %q: want memmie.deltas.<blob_id>", subject)
	}
	if err := ValidToken(t[2]); err != nil {
		return "", fmt.Errorf("parse delta subject %q: blob id: %w", subject, err)
	}
	return t[2], nil
}

// definitionKinds maps a definition kind to its subject token.
var definitionKinds = map[string]string{"schema": "schemas", "workflow": "workflows", "provider": "providers"}

// DefinitionSubject returns memmie.definitions.<kind>s.<id> for kind schema, workflow or
// provider.
func DefinitionSubject(kind, id string) (string, error) {
	plural, ok := definitionKinds[kind]
	if !ok {
		return "", fmt.Errorf("definition subject: unknown kind %q (want schema, workflow or provider)", kind)
	}
	if err := ValidToken(id); err != nil {
		return "", fmt.Errorf("definition subject: %s id: %w", kind, err)
	}
	return "memmie.definitions." + plural + "." + id, nil
}

// ParseDefinitionSubject splits memmie.definitions.<kind>s.<id>; kind is singular.
func ParseDefinitionSubject(subject string) (kind, id string, err error) {
	t := strings.Split(subject, ".")
	if len(t) != 4 || t[0] != "memmie" || t[1] != "definitions" {
		return "", "", fmt.Errorf("parse definition subject %q: want memmie.definitions.<kind>s.<id>", subject)
	}
	for k, plural := range definitionKinds {
		if plural == t[2] {
			kind = k
		}
	}
	if kind == "" {
		return "", "", fmt.Errorf("parse definition subject %q: unknown kind %q", subject, t[2])
	}
	if err := ValidToken(t[3]); err != nil {
		return "", "", fmt.Errorf("parse definition subject %q: id: %w", subject, err)
	}
	return kind, t[3], nil
}

// DeadLetterSubject returns memmie.deadletter.<source>.
func DeadLetterSubject(source string) (string, error) {
	if err := ValidToken(source); err != nil {
		return "", fmt.Errorf("dead-letter subject: source: %w", err)
	}
	return "memmie.deadletter." + source, nil
}

// DeadLetterRedrivenSubject returns memmie.deadletter.<source>.redriven, where the redrives of
// source's dead letters are recorded. A source is one token, so this subject of four tokens is
// never a source's: memmie.deadletter.* holds the dead letters, memmie.deadletter.*.redriven
// their redrives.
func DeadLetterRedrivenSubject(source string) (string, error) {
	if err := ValidToken(source); err != nil {
		return "", fmt.Errorf("dead-letter redriven subject: source: %w", err)
	}
	return "memmie.deadletter." + source + ".redriven", nil
}

// namespace is memmie's UUIDv5 namespace for event ids. Never change it: ids of re-decided
// events must stay equal to the stored ones.
var namespace = uuid.MustParse("53dab9d6-a921-4636-997a-c82d27f30271")

// ID returns the deterministic id of the event that fills slot key of scope (for execution
// events, scope is the execution id and key names the decision, such as
// run/1/step/validate/attempt/2/result). It is a UUIDv5, so a re-decided event gets the id it
// had and JetStream's duplicate window drops it.
func ID(scope, key string) string {
	return uuid.NewSHA1(namespace, []byte(scope+"\n"+key)).String()
}
