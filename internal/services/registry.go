package services

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Service is a service that workflows may call.
type Service struct {
	Name string
	// BaseURL is http(s)://host[:port][/prefix]; a step's path is joined onto it.
	BaseURL *url.URL
	// Headers are sent with every call, ${ENV} references already expanded.
	Headers map[string]string
	// Timeout bounds each call to the service. 0 leaves only the request's timeout.
	Timeout time.Duration
}

// Registry holds the services by name. It is immutable and safe for concurrent use.
type Registry struct {
	services map[string]Service
}

// MaxTimeoutSeconds bounds timeout_seconds.
const MaxTimeoutSeconds = 3600

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
	envRefRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	// headerNameRE is an HTTP token (RFC 9110).
	headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// ownHeaders are set by the caller on every request; a service may not configure them.
var ownHeaders = []string{"Content-Type", "Content-Length", "Idempotency-Key", "Host"}

// NewRegistry validates services and builds a registry of them.
func NewRegistry(services ...Service) (*Registry, error) {
	r := &Registry{services: make(map[string]Service, len(services))}
	for _, s := range services {
		if err := s.validate(); err != nil {
			return nil, fmt.Errorf("service %q: %w", s.Name, err)
		}
		if _, dup := r.services[s.Name]; dup {
			return nil, fmt.Errorf("service %q: registered twice", s.Name)
		}
		s.Headers = maps.Clone(s.Headers)
		u := *s.BaseURL
		s.BaseURL = &u
		r.services[s.Name] = s
	}
	return r, nil
}

func (s Service) validate() error {
	if !nameRE.MatchString(s.Name) {
		return errors.New("name: must be letters, digits, '_' or '-'")
	}
	if s.BaseURL == nil {
		return errors.New("base_url: missing")
	}
	if err := checkBaseURL(s.BaseURL); err != nil {
		return fmt.Errorf("base_url: %w", err)
	}
	if s.Timeout < 0 || s.Timeout > MaxTimeoutSeconds*time.Second {
		return fmt.Errorf("timeout_seconds: must be between 0 and %d", MaxTimeoutSeconds)
	}
	for k, v := range s.Headers {
		if err := checkHeader(k, v); err != nil {
			return fmt.Errorf("headers.%s: %w", k, err)
		}
	}
	return nil
}

// ParseBaseURL parses and checks a base_url: http or https, a host, no user, query or
// fragment.
func ParseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if err := checkBaseURL(u); err != nil {
		return nil, err
	}
	return u, nil
}

func checkBaseURL(u *url.URL) error {
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: must be an http or https URL", u.Redacted())
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q: has no host", u.Redacted())
	case u.User != nil:
		return fmt.Errorf("%q: must not carry credentials; put them in headers with ${ENV}", u.Redacted())
	case u.RawQuery != "" || u.ForceQuery:
		return fmt.Errorf("%q: must not have a query", u.Redacted())
	case u.Fragment != "":
		return fmt.Errorf("%q: must not have a fragment", u.Redacted())
	}
	return nil
}

func checkHeader(name, value string) error {
	if !headerNameRE.MatchString(name) {
		return errors.New("not a valid header name")
	}
	for _, own := range ownHeaders {
		if strings.EqualFold(name, own) {
			return errors.New("set by memmie on every call; it cannot be configured")
		}
	}
	if strings.HasPrefix(strings.ToLower(name), "x-memmie-") {
		return errors.New("X-Memmie-* headers are set by memmie; they cannot be configured")
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return errors.New("value has a line break or NUL")
	}
	return nil
}

// Lookup returns the service registered under name.
func (r *Registry) Lookup(name string) (Service, bool) {
	if r == nil {
		return Service{}, false
	}
	s, ok := r.services[name]
	return s, ok
}

// Names returns the registered names, sorted.
func (r *Registry) Names() []string {
	if r == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(r.services))
}

// Len is the number of services.
func (r *Registry) Len() int {
	if r == nil {
		return 0
	}
	return len(r.services)
}

// Merge returns base with override laid over it, name by name: an overriding service's
// base_url replaces base's, its headers are added (replacing those of the same name), and its
// timeout replaces base's when it has one. Services only in one of them are kept as they are.
//
// FromEnv's services carry only a URL, so Merge(file, env) lets MEMMIE_SERVICE_<NAME>_URL
// move a service that the file describes while keeping the file's headers and timeout.
// Either argument may be nil.
func Merge(base, override *Registry) *Registry {
	out := &Registry{services: map[string]Service{}}
	if base != nil {
		maps.Copy(out.services, base.services)
	}
	if override == nil {
		return out
	}
	for name, o := range override.services {
		b, ok := out.services[name]
		if !ok {
			out.services[name] = o
			continue
		}
		b.BaseURL = o.BaseURL
		headers := maps.Clone(b.Headers)
		if headers == nil && len(o.Headers) > 0 {
			headers = map[string]string{}
		}
		maps.Copy(headers, o.Headers)
		b.Headers = headers
		if o.Timeout > 0 {
			b.Timeout = o.Timeout
		}
		out.services[name] = b
	}
	return out
}

// Environment variables that name services.
const (
	EnvPrefix = "MEMMIE_SERVICE_"
	EnvSuffix = "_URL"
)

// FromEnv reads services from environment entries ("KEY=value", as os.Environ returns):
// MEMMIE_SERVICE_<NAME>_URL=<base_url> registers service <name>, the NAME part lower-cased
// with its underscores kept: MEMMIE_SERVICE_STUDIO_URL names "studio",
// MEMMIE_SERVICE_BLOB_STORE_URL names "blob_store". A service whose name has '-' or capitals
// can only come from the services file. Other variables are ignored.
func FromEnv(environ []string) (*Registry, error) {
	var list []Service
	from := map[string]string{}
	for _, kv := range environ {
		key, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(key, EnvPrefix) || !strings.HasSuffix(key, EnvSuffix) ||
			len(key) <= len(EnvPrefix)+len(EnvSuffix) {
			continue
		}
		name := strings.ToLower(key[len(EnvPrefix) : len(key)-len(EnvSuffix)])
		if prev, dup := from[name]; dup {
			return nil, fmt.Errorf("%s and %s both name service %q", prev, key, name)
		}
		from[name] = key
		if value == "" {
			return nil, fmt.Errorf("%s: empty", key)
		}
		u, err := ParseBaseURL(value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		list = append(list, Service{Name: name, BaseURL: u})
	}
	r, err := NewRegistry(list...)
	if err != nil {
		return nil, fmt.Errorf("services from environment: %w", err)
	}
	return r, nil
}

// LoadFile reads a services file (--services), expanding ${ENV} references in header values
// from the process environment.
//
//	studio:
//	  base_url: http://localhost:3000/api
//	  headers:
//	    Authorization: Bearer ${STUDIO_TOKEN}
//	  timeout_seconds: 20
func LoadFile(path string) (*Registry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read services file: %w", err)
	}
	r, err := Parse(data, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("%s:%w", path, err)
	}
	return r, nil
}

// Parse reads a services document, looking ${ENV} references up with lookupEnv (os.LookupEnv
// in LoadFile). An error starts with the line it is about: "12: studio.base_url: ...".
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Registry, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("1: %w", err)
	}
	if doc.Kind == 0 { // empty document
		return NewRegistry()
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return NewRegistry()
	}
	if root.Kind != yaml.MappingNode {
		return nil, lineErr(root, "", "must be a mapping of service names to services")
	}
	var list []Service
	seen := map[string]bool{}
	for i := 0; i < len(root.Content); i += 2 {
		key, val := root.Content[i], root.Content[i+1]
		name := key.Value
		if seen[name] {
			return nil, lineErr(key, name, "defined twice")
		}
		seen[name] = true
		s, err := parseService(name, key, val, lookupEnv)
		if err != nil {
			return nil, err
		}
		list = append(list, s)
	}
	return NewRegistry(list...)
}

func parseService(name string, key, val *yaml.Node, lookupEnv func(string) (string, bool)) (Service, error) {
	if !nameRE.MatchString(name) {
		return Service{}, lineErr(key, name, "a service name must be letters, digits, '_' or '-'")
	}
	if val.Kind != yaml.MappingNode {
		return Service{}, lineErr(val, name, "must be a mapping with base_url")
	}
	s := Service{Name: name}
	var haveURL bool
	for i := 0; i < len(val.Content); i += 2 {
		k, v := val.Content[i], val.Content[i+1]
		field := name + "." + k.Value
		switch k.Value {
		case "base_url":
			var raw string
			if err := v.Decode(&raw); err != nil || v.Kind != yaml.ScalarNode {
				return Service{}, lineErr(v, field, "must be a string")
			}
			u, err := ParseBaseURL(raw)
			if err != nil {
				return Service{}, lineErr(v, field, err.Error())
			}
			s.BaseURL, haveURL = u, true
		case "timeout_seconds":
			var secs int
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&secs) != nil {
				return Service{}, lineErr(v, field, "must be a whole number of seconds")
			}
			if secs < 0 || secs > MaxTimeoutSeconds {
				return Service{}, lineErr(v, field, fmt.Sprintf("must be between 0 and %d", MaxTimeoutSeconds))
			}
			s.Timeout = time.Duration(secs) * time.Second
		case "headers":
			headers, err := parseHeaders(field, v, lookupEnv)
			if err != nil {
				return Service{}, err
			}
			s.Headers = headers
		default:
			return Service{}, lineErr(k, field, "unknown field (want base_url, headers, timeout_seconds)")
		}
	}
	if !haveURL {
		return Service{}, lineErr(key, name+".base_url", "missing")
	}
	return s, nil
}

func parseHeaders(field string, v *yaml.Node, lookupEnv func(string) (string, bool)) (map[string]string, error) {
	if v.Kind != yaml.MappingNode {
		return nil, lineErr(v, field, "must be a mapping of header names to values")
	}
	headers := make(map[string]string, len(v.Content)/2)
	for i := 0; i < len(v.Content); i += 2 {
		hk, hv := v.Content[i], v.Content[i+1]
		hfield := field + "." + hk.Value
		if hv.Kind != yaml.ScalarNode || hv.Tag == "!!null" {
			return nil, lineErr(hv, hfield, "must be a string")
		}
		value, err := expandEnv(hv.Value, lookupEnv)
		if err != nil {
			return nil, lineErr(hv, hfield, err.Error())
		}
		if err := checkHeader(hk.Value, value); err != nil {
			return nil, lineErr(hk, hfield, err.Error())
		}
		for existing := range headers {
			if strings.EqualFold(existing, hk.Value) {
				return nil, lineErr(hk, hfield, "defined twice")
			}
		}
		headers[hk.Value] = value
	}
	return headers, nil
}

// expandEnv replaces each ${NAME} in s. A variable that is not set is an error; one set to
// the empty string expands to it.
func expandEnv(s string, lookupEnv func(string) (string, bool)) (string, error) {
	var missing []string
	out := envRefRE.ReplaceAllStringFunc(s, func(ref string) string {
		name := ref[2 : len(ref)-1]
		v, ok := lookupEnv(name)
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("environment variable %s is not set", strings.Join(missing, ", "))
	}
	// What is left of "${" after expansion was not a well-formed reference.
	if rest := envRefRE.ReplaceAllString(s, ""); strings.Contains(rest, "${") {
		return "", errors.New("malformed ${...} reference (want ${NAME}, NAME of letters, digits and '_')")
	}
	return out, nil
}

func lineErr(n *yaml.Node, field, msg string) error {
	if field == "" {
		return fmt.Errorf("%d: %s", n.Line, msg)
	}
	return fmt.Errorf("%d: %s: %s", n.Line, field, msg)
}
