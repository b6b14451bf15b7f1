package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/chatd-dev/chatd/bizapi/settings"
)

// getSettings: GET /v1/settings/application.
func (h *Handler) getSettings(w http.ResponseWriter, _ *http.Request, _ identity) error {
	h.writeRaw(w, http.StatusOK, h.withMeta(h.live.Get().Public()))
	return nil
}

// patchSettings: PATCH /v1/settings/application changes the keys in the body, saves, applies, and
// answers with the new settings (as GET).
func (h *Handler) patchSettings(w http.ResponseWriter, r *http.Request, _ identity) error {
	bp, err := h.readBody(r)
	if err != nil {
		return err
	}
	body := append([]byte(nil), *bp...)
	putBody(bp)

	h.settingsMu.Lock()
	defer h.settingsMu.Unlock()
	next, err := h.live.Get().Patch(body)
	if err != nil {
		var ke *settings.KeyError
		switch {
		case errors.As(err, &ke):
			return errInvalid("%v", ke)
		case errors.Is(err, settings.ErrMalformed):
			return apiErr(CodeInvalidRequest, "%v", err)
		}
		return errInvalid("%v", err)
	}
	return h.saveSettings(w, r, next)
}

// deleteSettings: DELETE /v1/settings/application resets every key (webhook URL and secret too) to
// its default and answers with the result.
func (h *Handler) deleteSettings(w http.ResponseWriter, r *http.Request, _ identity) error {
	h.settingsMu.Lock()
	defer h.settingsMu.Unlock()
	return h.saveSettings(w, r, settings.Defaults())
}

// saveSettings stores s, then makes it live. Caller holds settingsMu.
func (h *Handler) saveSettings(w http.ResponseWriter, r *http.Request, s settings.Settings) error {
	if err := h.store.SaveSettings(r.Context(), s.Marshal()); err != nil {
		return storeError("the settings were not changed; retry", fmt.Errorf("SaveSettings: %w", err))
	}
	h.live.Set(s)
	h.log.Info("api: application settings changed")
	h.writeRaw(w, http.StatusOK, h.withMeta(s.Public()))
	return nil
}
