package evidence

import "time"

// Statement is an in-toto Statement v1 (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md)
// with warren's acquisition predicate.
type Statement struct {
	Type          string    `json:"_type"` // StatementType
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"` // PredicateType
	Predicate     Predicate `json:"predicate"`
}

// Subject is an in-toto ResourceDescriptor naming one file: the archive (ArchiveName) or a path inside it.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"` // "sha256": lowercase hex
}

// Predicate is what warren says about one target's acquisition (predicateType https://warren.dev/acquisition/v1).
type Predicate struct {
	Case     string `json:"case,omitempty"`
	Examiner string `json:"examiner,omitempty"`
	// AcquisitionID names the run; every Audit-ID of the run starts with "warren-acq-<AcquisitionID>-".
	AcquisitionID string    `json:"acquisitionID"`
	Target        Target    `json:"target"`
	Caller        Caller    `json:"caller"`
	Collector     Collector `json:"collector"`
	Profile       string    `json:"profile"`
	// Mode is how warren reached the container: "exec" (pods/exec through the gateway), "ephemeral" (an ephemeral
	// container running the collector image in the target's PID namespace, read over pods/attach: Ephemeral says
	// which), "node" (a collector pod on the target's node reading containerd's state: NodePod says which), "volume"
	// (a node's disk, offline: Volume says where).
	Mode string `json:"mode"`
	// ModeAttempts are the modes considered for this target, in order, each with its outcome: why the earlier ones
	// were not used, and which was.
	ModeAttempts []ModeAttempt `json:"modeAttempts,omitempty"`
	// Method is how the container's side was collected: "collector" (the static collector ran in the container)
	// or "shell" (only the shell and the receiver's hashing; MethodReason says why).
	Method       string      `json:"method"`
	MethodReason string      `json:"methodReason,omitempty"`
	StartedOn    time.Time   `json:"startedOn"`
	FinishedOn   time.Time   `json:"finishedOn"`
	Limits       Limits      `json:"limits"`
	Archive      ArchiveInfo `json:"archive"`
	// Files holds what the subjects cannot say: for a redacted or capped file, the original's size and, when it was
	// read whole, its sha256. Files stored as read are not listed here.
	Files   []FileNote `json:"files,omitempty"`
	Skipped []Skip     `json:"skipped,omitempty"`
	// Requests are every request of this target's acquisition, in order, as the gateway saw them.
	Requests []Request `json:"requests"`
	// Witness is the exec stdout that carried the collection; the connector's audit record of that request holds
	// the same byte count and sha256.
	Witness Witness `json:"witness"`
	// Execs are every exec of the collection, in order, each with the digests of its stdin and stdout as the
	// acquirer sent and received them (the connector's audit record of the exec has the same stdout digest).
	Execs []Exec `json:"execs,omitempty"`
	// Footprint is what the collection left or changed in the container (an uploaded collector, its removal).
	Footprint []string `json:"footprint,omitempty"`
	// Volume is where on a node's disk a volume-mode acquisition (`warren acquire volume`, Mode "volume") read the
	// container from.
	Volume *VolumeSource `json:"volume,omitempty"`
	// Ephemeral is the ephemeral container an ephemeral-mode acquisition added to the target's pod.
	Ephemeral *EphemeralSource `json:"ephemeral,omitempty"`
	// NodePod is the collector pod a node-mode acquisition ran on the target's node, and what became of it.
	NodePod  *NodePodSource `json:"nodePod,omitempty"`
	Acquirer Acquirer       `json:"acquirer"`
}

// VolumeSource is the part of a node's disk a volume-mode acquisition read: containerd's root on the mounted
// volume, its databases as read (their sha256 ties the evidence to one state of them), the container's snapshots,
// and where each image layer's files came from.
type VolumeSource struct {
	Root           string `json:"root"`           // the mounted volume, as given
	ContainerdRoot string `json:"containerdRoot"` // relative to Root ("." for Root itself)
	Layout         string `json:"layout"`         // which known layout it is: containerd, k3s, rke2, bottlerocket, root, custom
	Namespace      string `json:"namespace"`      // containerd namespace of the container (Kubernetes: k8s.io)
	Snapshotter    string `json:"snapshotter"`
	SnapshotKey    string `json:"snapshotKey"`
	// Databases are meta.db and the snapshotter's metadata.db, relative to the containerd root.
	Databases []VolumeDatabase `json:"databases"`
	// Layers are the image's layers, lowest first.
	Layers []VolumeLayer `json:"layers,omitempty"`
	// Drift counts what the container changed against its image; the archive's drift/changes.json lists it.
	Drift VolumeDrift `json:"drift"`
}

// ModeAttempt is one mode considered for a target.
type ModeAttempt struct {
	Mode string `json:"mode"`
	// Outcome is used, failed (tried: Reason says what happened), not-allowed (not in --allow-modes),
	// not-consented (its lasting trace was not accepted), not-permitted (the token, the connector's ceiling or RBAC
	// refuses what it needs) or unavailable (it cannot read this container: Reason says why).
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
}

// Mode attempt outcomes.
const (
	OutcomeUsed         = "used"
	OutcomeFailed       = "failed"
	OutcomeNotAllowed   = "not-allowed"
	OutcomeNotConsented = "not-consented"
	OutcomeNotPermitted = "not-permitted"
	OutcomeUnavailable  = "unavailable"
)

// EphemeralSource is the ephemeral container an acquisition added. It cannot be removed from the pod: Kubernetes
// keeps it in the pod's spec (and its status, terminated once the collector exits) for the pod's life.
type EphemeralSource struct {
	Container string `json:"container"`
	Image     string `json:"image"`
	// ImageID is the image as the kubelet ran it (status.ephemeralContainerStatuses[].imageID).
	ImageID string `json:"imageID,omitempty"`
	// TargetContainer is the container whose PID namespace it joined (targetContainerName).
	TargetContainer string `json:"targetContainer"`
	// User and Capabilities are what it ran with, and why (copied from the target).
	User         string `json:"user"`
	Capabilities string `json:"capabilities"`
	// Consent is how the examiner accepted the lasting trace: --allow-modes or --mode given, or a terminal prompt.
	Consent string    `json:"consent"`
	Added   time.Time `json:"added"`
	// Log: its stdout, sealed with a key only the acquirer had, is also in the node's container log.
	Log string `json:"log"`
}

// NodePodSource is the collector pod of a node-mode acquisition.
type NodePodSource struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	UID       string `json:"uid,omitempty"`
	Node      string `json:"node"`
	Image     string `json:"image"`
	ImageID   string `json:"imageID,omitempty"`
	// RuntimeDir and ContainerdRoot are the node's directories the pod mounted read-only; ContainerdNamespace and
	// ContainerID the container it read.
	RuntimeDir          string    `json:"runtimeDir"`
	ContainerdRoot      string    `json:"containerdRoot"`
	ContainerdNamespace string    `json:"containerdNamespace"`
	ContainerID         string    `json:"containerID"`
	Consent             string    `json:"consent"`
	Created             time.Time `json:"created"`
	// Deleted is when the pod was deleted (DeletedConfirmed: the API no longer had it); DeleteError what went wrong.
	Deleted          time.Time `json:"deleted,omitzero"`
	DeletedConfirmed bool      `json:"deletedConfirmed"`
	DeleteError      string    `json:"deleteError,omitempty"`
	// Snapshotter and Drift are what the collector found (node/bundle.json has the rest).
	Snapshotter string `json:"snapshotter,omitempty"`
	Drift       string `json:"drift,omitempty"`
}

// VolumeDatabase is one database as it was read.
type VolumeDatabase struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// VolumeLayer is one image layer: its digests, and whether its files were read from the content store's blob
// (Source "content", digests checked), the snapshotter's directory ("snapshot"), or not at all ("missing").
type VolumeLayer struct {
	Digest      string `json:"digest,omitempty"`
	DiffID      string `json:"diffID,omitempty"`
	ChainID     string `json:"chainID,omitempty"`
	Source      string `json:"source"`
	SnapshotDir string `json:"snapshotDir,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// VolumeDrift counts the container's changes against its image.
type VolumeDrift struct {
	Added    int `json:"added"`
	Changed  int `json:"changed"`
	Deleted  int `json:"deleted"`
	CopiedUp int `json:"copiedUp"` // in the writable layer, identical to the image's file
}

// Target identifies the container acquired.
type Target struct {
	Cluster     string `json:"cluster"`
	Namespace   string `json:"namespace"`
	Pod         string `json:"pod"`
	PodUID      string `json:"podUID"`
	Container   string `json:"container"`
	ContainerID string `json:"containerID,omitempty"`
	Image       string `json:"image"`
	// ImageID is the image's digest as the kubelet reports it (status.containerStatuses[].imageID).
	ImageID string `json:"imageID,omitempty"`
	Node    string `json:"node,omitempty"`
}

// Caller is the caller token's identity, as read from the token the requests carried.
type Caller struct {
	Subject string `json:"subject"`
	TokenID string `json:"tokenID,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
}

// Collector is the in-container collector that ran, when one did.
type Collector struct {
	Version string `json:"version,omitempty"`
	Digest  string `json:"digest,omitempty"` // sha256:HEX of the binary sent; its self-hash matched it
}

// Limits are the bounds the acquisition ran under.
type Limits struct {
	MaxBytes   int64  `json:"maxBytes,omitempty"`
	TimeBudget string `json:"timeBudget,omitempty"`
}

// ArchiveInfo describes evidence.tar as written (also its subject).
type ArchiveInfo struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Files  int    `json:"files"` // regular files inside, each a subject
}

// FileNote adds to a subject what was changed on the way: redaction or a size cap.
type FileNote struct {
	Path           string `json:"path"`
	Size           int64  `json:"size"`
	Redacted       bool   `json:"redacted,omitempty"`
	Truncated      bool   `json:"truncated,omitempty"`
	OriginalSize   int64  `json:"originalSize,omitempty"`
	OriginalSHA256 string `json:"originalSha256,omitempty"`
}

// Skip is an item not collected, and why: permission, size-cap, time-cap, not-found, secret, forbidden, ...
type Skip struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// Request is one request of an acquisition: the Audit-ID it carried (which the gateway's audit record and the
// kube-apiserver's audit event show) and the request id the gateway answered with (its own and the connector's
// audit records carry it).
type Request struct {
	AuditID          string    `json:"auditID"`
	GatewayRequestID string    `json:"gatewayRequestID,omitempty"`
	Method           string    `json:"method"`
	Path             string    `json:"path"`
	Status           int       `json:"status,omitempty"`
	Time             time.Time `json:"time"`
}

// Witness is the hash of the exec stdout stream that carried the container's evidence, as received.
type Witness struct {
	AuditID      string `json:"auditID,omitempty"`
	StdoutBytes  int64  `json:"stdoutBytes"`
	StdoutSHA256 string `json:"stdoutSha256"`
}

// Exec is one exec of a collection.
type Exec struct {
	AuditID          string    `json:"auditID"`
	GatewayRequestID string    `json:"gatewayRequestID,omitempty"`
	Argv             []string  `json:"argv"` // as sent, a constant script named by its name ("script:probe")
	StdinBytes       int64     `json:"stdinBytes,omitempty"`
	StdinSHA256      string    `json:"stdinSha256,omitempty"`
	StdoutBytes      int64     `json:"stdoutBytes"`
	StdoutSHA256     string    `json:"stdoutSha256"`
	Started          time.Time `json:"started"`
	Ended            time.Time `json:"ended"`
	Error            string    `json:"error,omitempty"`
}

// Acquirer is the software that wrote the statement.
type Acquirer struct {
	Name    string `json:"name"` // "warren"
	Version string `json:"version"`
}
