package wire

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWriteStatusRetryAfter(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteStatus(rec, 429, "too many", 5)
	var st metav1.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if rec.Header().Get("Retry-After") != "5" || st.Details == nil || st.Details.RetryAfterSeconds != 5 || st.Code != 429 || st.Reason != metav1.StatusReasonTooManyRequests {
		t.Fatalf("%v %+v", rec.Header(), st)
	}
	rec = httptest.NewRecorder()
	WriteStatus(rec, 403, "no", 0)
	st = metav1.Status{}
	json.Unmarshal(rec.Body.Bytes(), &st)
	if rec.Header().Get("Retry-After") != "" || st.Details != nil {
		t.Fatalf("no retry: %v %+v", rec.Header(), st)
	}
}
