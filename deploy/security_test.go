package deploy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// checkPodLockedDown fails unless the pod runs as a non-root user with no
// privilege, no capability, the runtime's seccomp profile and a
// read-only root filesystem, in every container, and shares nothing with
// its node.
func checkPodLockedDown(t *testing.T, what string, pod *corev1.PodSpec) {
	t.Helper()
	psc := pod.SecurityContext
	if psc == nil {
		t.Fatalf("%s: no pod securityContext", what)
	}
	if !isTrue(psc.RunAsNonRoot) || psc.RunAsUser == nil || *psc.RunAsUser == 0 || psc.RunAsGroup == nil || *psc.RunAsGroup == 0 || psc.FSGroup == nil || *psc.FSGroup == 0 {
		t.Errorf("%s: pod securityContext %+v, want runAsNonRoot and non-zero runAsUser, runAsGroup and fsGroup", what, psc)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile %v, want RuntimeDefault", what, psc.SeccompProfile)
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("%s: shares the node's network, PID or IPC namespace", what)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken = %v, want false", what, pod.AutomountServiceAccountToken)
	}
	if len(pod.Containers) == 0 {
		t.Fatalf("%s: no container", what)
	}
	for _, c := range append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("%s: container %s has no securityContext", what, c.Name)
			continue
		}
		if !isTrue(sc.RunAsNonRoot) || (sc.RunAsUser != nil && *sc.RunAsUser == 0) || (sc.RunAsGroup != nil && *sc.RunAsGroup == 0) {
			t.Errorf("%s: container %s may run as root: %+v", what, c.Name, sc)
		}
		if !isTrue(sc.ReadOnlyRootFilesystem) {
			t.Errorf("%s: container %s: readOnlyRootFilesystem is not true", what, c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: container %s: allowPrivilegeEscalation is not false", what, c.Name)
		}
		if isTrue(sc.Privileged) {
			t.Errorf("%s: container %s is privileged", what, c.Name)
		}
		if sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			t.Errorf("%s: container %s capabilities %+v, want drop [ALL] and nothing added", what, c.Name, sc.Capabilities)
		}
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: container %s seccompProfile %v, want RuntimeDefault", what, c.Name, sc.SeccompProfile)
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() || c.Resources.Limits.Memory().Cmp(*c.Resources.Requests.Memory()) < 0 {
			t.Errorf("%s: container %s resources %+v, want memory requests and limits, limit ≥ request", what, c.Name, c.Resources)
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				t.Errorf("%s: container %s takes secret %s in $%s: secrets are mounted as files, which the process reads by file: reference", what, c.Name, e.ValueFrom.SecretKeyRef.Name, e.Name)
			}
		}
		if !mountsAt(c, "/tmp") {
			t.Errorf("%s: container %s has no writable /tmp (the root filesystem is read-only)", what, c.Name)
		}
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("%s: volume %s is a hostPath", what, v.Name)
		}
	}
}

func isTrue(b *bool) bool { return b != nil && *b }

func mountsAt(c corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return true
		}
	}
	return false
}

// volumeAt returns the volume mounted at path in c.
func volumeAt(pod *corev1.PodSpec, c corev1.Container, path string) *corev1.Volume {
	for _, m := range c.VolumeMounts {
		if m.MountPath != path {
			continue
		}
		for i := range pod.Volumes {
			if pod.Volumes[i].Name == m.Name {
				return &pod.Volumes[i]
			}
		}
	}
	return nil
}
