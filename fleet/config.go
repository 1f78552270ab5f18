package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config configures the link to the shared cache.
type Config struct {
	// URL is redis://[user:pass@]host:port/db, rediss:// for TLS,
	// unix:///path, or redis-sentinel:// (rediss-sentinel://) with a
	// master_name parameter and more sentinels as addr parameters.
	URL string
	// PasswordFile, when set, holds the password (a trailing newline is
	// ignored); it wins over one in URL.
	PasswordFile string
	// CAFile, when set, is the CA bundle a rediss:// server is verified
	// against instead of the system's.
	CAFile string
	// Cluster names the fleet: daemons share records only within it.
	Cluster string
	// Node names this daemon in heartbeats and events (the host name).
	Node string
	// QueueSize bounds the local results waiting to be written; the
	// oldest is dropped past it (counted).
	QueueSize int
	// Heartbeat is how often this node says it is alive.
	Heartbeat time.Duration
}

func (c *Config) setDefaults() {
	if c.Cluster == "" {
		c.Cluster = "default"
	}
	if c.Node == "" {
		c.Node, _ = os.Hostname()
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 10000
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 5 * time.Second
	}
}

// client returns the go-redis client URL describes.
func (c *Config) client() (redis.UniversalClient, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("shared_cache: %w", err)
	}
	var password string
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("shared_cache_password_file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	var tlsConf *tls.Config
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("shared_cache CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("shared_cache CA file %s: no certificate found", c.CAFile)
		}
		tlsConf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
		o, err := redis.ParseURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("shared_cache: %w", err)
		}
		if password != "" {
			o.Password = password
		}
		if tlsConf != nil && o.TLSConfig != nil {
			tlsConf.ServerName = o.TLSConfig.ServerName
			o.TLSConfig = tlsConf
		}
		tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout)
		o.MaxRetries = -1 // the fleet retries itself; lookups never wait
		return redis.NewClient(o), nil
	case "redis-sentinel", "rediss-sentinel":
		u.Scheme = strings.TrimSuffix(u.Scheme, "-sentinel")
		o, err := redis.ParseFailoverURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("shared_cache: %w", err)
		}
		if o.MasterName == "" {
			return nil, fmt.Errorf("shared_cache: %s needs a master_name parameter", u.Scheme+"-sentinel://")
		}
		if password != "" {
			o.Password = password
		}
		if tlsConf != nil && o.TLSConfig != nil {
			tlsConf.ServerName = o.TLSConfig.ServerName
			o.TLSConfig = tlsConf
		}
		tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout)
		o.MaxRetries = -1
		return redis.NewFailoverClient(o), nil
	default:
		return nil, fmt.Errorf("shared_cache: scheme %q: want redis, rediss, unix, redis-sentinel or rediss-sentinel", u.Scheme)
	}
}

// tune gives unset timeouts short values: a slow Redis must be noticed
// within seconds, not block a writer for the library's defaults.
func tune(dial, read, write *time.Duration) {
	if *dial == 0 || *dial == 5*time.Second {
		*dial = 2 * time.Second
	}
	if *read == 0 || *read == 3*time.Second {
		*read = 2 * time.Second
	}
	if *write == 0 || *write == 3*time.Second {
		*write = 2 * time.Second
	}
}

// Redacted is URL with any password replaced, for logs.
func (c *Config) Redacted() string {
	u, err := url.Parse(c.URL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
