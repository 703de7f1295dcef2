// Package configs loads the runtime configuration: one TOML file per runtime
// class, applied as an overlay on embedded defaults.
package configs

// Config is the loaded configuration of one runtime class.
type Config struct {
	// Path is the file it was loaded from ("" for the embedded default).
	Path string
}
