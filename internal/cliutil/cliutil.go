// Package cliutil holds what the commands in cmd/ share: the log setup and strict TOML config files.
package cliutil

import (
	"fmt"
	"io"
	"log/slog"

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
