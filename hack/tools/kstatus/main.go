// Command kstatus reads Kubernetes objects as JSON (one document, or a JSON array) on stdin and
// prints, for each, the status that sigs.k8s.io/cli-utils/pkg/kstatus computes for it: the same
// verdict Flux, Helm's --wait and kpt reach. Output: one JSON line per object,
// {"status":"Current","message":"..."}.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	// Decoded the way kubectl and the API machinery do (integers stay int64).
	var docs []json.RawMessage
	if len(raw) > 0 && raw[0] == '[' {
		if err := json.Unmarshal(raw, &docs); err != nil {
			fail(err)
		}
	} else {
		docs = append(docs, raw)
	}
	var objs []*unstructured.Unstructured
	for _, d := range docs {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(d); err != nil {
			fail(err)
		}
		objs = append(objs, u)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for _, o := range objs {
		res, err := status.Compute(o)
		if err != nil {
			fail(err)
		}
		line, err := json.Marshal(verdict{Status: res.Status.String(), Message: res.Message})
		if err != nil {
			fail(err)
		}
		fmt.Fprintln(out, string(line))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(2)
}
