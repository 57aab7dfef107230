package api

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The cache keeps at most its size of states, dropping the least recently read first.
func TestStatesAreBounded(t *testing.T) {
	c := newStates(nil, 2)
	a, b := c.get("a"), c.get("b")
	assert.Same(t, a, c.get("a"), "a read again is the same state")
	c.get("c") // b is the least recently read
	assert.Len(t, c.m, 2)
	assert.Equal(t, 2, c.lru.Len())
	assert.Same(t, a, c.get("a"))
	assert.NotSame(t, b, c.get("b"), "b was dropped: a new, empty state")
}
