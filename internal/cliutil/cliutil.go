// Package cliutil holds what the commands in cmd/ share: subcommand dispatch (Program), the log setup
// and strict TOML config files.
package cliutil

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/BurntSushi/toml"
)

// NewLogger returns a logger writing to w at level ("debug", "info", "warn", "error") in format
// ("text" or "json").
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: use text or json", format)
}

// LoadTOML decodes the config file at path into v; a setting v does not know is an error, so that a
// typo does not silently fall back to a default.
func LoadTOML(path string, v any) error {
	md, err := toml.DecodeFile(path, v)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("config %s: unknown setting %q", path, und[0].String())
	}
	return nil
}

// ParseWithConfig parses args into fs, which must have a "config" flag. When it names a file, the
// file is loaded into config (LoadTOML) and args are parsed again, so that flags override the file.
// Arguments left after the flags are an error.
func ParseWithConfig(fs *flag.FlagSet, args []string, config any) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	if path := fs.Lookup("config").Value.String(); path != "" {
		if err := LoadTOML(path, config); err != nil {
			return err
		}
		fs.Parse(args)
	}
	return nil
}

// Duration is a time.Duration that a TOML config file gives as a string ("30s", "10m").
type Duration struct{ time.Duration }

// UnmarshalText parses the string with time.ParseDuration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	d.Duration = v
	return err
}
