package main

import (
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

func TestEnvName(t *testing.T) {
	require.Equal(t, "MEMMIE_NATS_URL", envName("nats-url"))
	require.Equal(t, "MEMMIE_API_URL", envName("api-url"))
}

func TestFlagsFallBackToEnvironment(t *testing.T) {
	var got string
	var n int
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	cmd.Flags().StringVar(&got, "nats-url", "nats://default", "")
	cmd.Flags().IntVar(&n, "priority", 0, "")
	env := map[string]string{"MEMMIE_NATS_URL": "nats://from-env:4222", "MEMMIE_PRIORITY": "7"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	require.NoError(t, cmd.ParseFlags([]string{"--priority", "3"}))
	require.NoError(t, applyEnv(cmd, lookup))
	require.Equal(t, "nats://from-env:4222", got, "unset flag takes the environment")
	require.Equal(t, 3, n, "a flag given on the command line wins over the environment")
}

func TestBadEnvironmentValueIsAnError(t *testing.T) {
	var n int
	cmd := &cobra.Command{Use: "x"}
	cmd.Flags().IntVar(&n, "priority", 0, "")
	err := applyEnv(cmd, func(k string) (string, bool) { return "high", k == "MEMMIE_PRIORITY" })
	require.ErrorContains(t, err, "MEMMIE_PRIORITY")
}

func TestHelpDocumentsEnvironment(t *testing.T) {
	root := newRootCmd()
	validate, _, err := root.Find([]string{"validate"})
	require.NoError(t, err)
	require.NotNil(t, validate)
	for _, c := range root.Commands() {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" {
				require.Contains(t, f.Usage, envName(f.Name), "flag --%s of %s", f.Name, c.Name())
			}
		})
	}
}
