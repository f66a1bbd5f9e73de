// The command-centre API on the same origin: JSON over fetch with a bearer
// token, and the live alert stream over EventSource.

export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, error, detail) {
    super(detail ? `${error}: ${detail}` : error);
    this.name = "ApiError";
    this.status = status;
    this.error = error;
    this.detail = detail;
  }
}

async function errorOf(response) {
  let error = response.statusText || "error";
  let detail = "";
  try {
    const body = await response.json();
    if (body && typeof body === "object") {
      error = body.error ?? error;
      detail = body.detail ?? "";
      if (typeof detail !== "string") {
        // FastAPI's validation errors: a list of {loc, msg}
        detail = Array.isArray(detail)
          ? detail.map((d) => (d && d.msg ? `${(d.loc ?? []).join(".")}: ${d.msg}` : JSON.stringify(d))).join("; ")
          : JSON.stringify(detail);
      }
    }
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, String(error), detail ? String(detail) : "");
}

export function createClient(getToken) {
  async function request(method, path, body) {
    const headers = { Accept: "application/json" };
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(API + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, "network", err instanceof Error ? err.message : String(err));
    }
    if (!response.ok) throw await errorOf(response);
    if (response.status === 204) return null;
    return response.json();
  }

  return {
    me: () => request("GET", "/me"),
    catalogue: () => request("GET", "/catalogue"),
    alerts: (params) => request("GET", `/alerts?${params.toString()}`),
    alert: (id) => request("GET", `/alerts/${encodeURIComponent(id)}`),
    act: (id, body) => request("POST", `/alerts/${encodeURIComponent(id)}/actions`, body),
    districts: () => request("GET", "/districts"),
    performance: () => request("GET", "/performance"),
    feedback: (params) => request("GET", `/appeals/feedback?${params.toString()}`),
    report: (params) => request("GET", `/appeals/report?${params.toString()}`),
    audit: (limit = 200) => request("GET", `/audit?limit=${limit}`),
  };
}

// The live stream. EventSource reconnects by itself (with Last-Event-ID) after
// a network error; when the server refuses the stream (readyState CLOSED) the
// console checks its token and opens a new one, so onGap lets it refetch what
// it may have missed.
export class AlertStream {
  constructor(getToken, { onAlert, onState, onClosed }) {
    this.getToken = getToken;
    this.onAlert = onAlert;
    this.onState = onState;
    this.onClosed = onClosed;
    this.source = null;
    this.retry = null;
  }

  open() {
    this.close();
    const token = this.getToken();
    if (!token) return;
    const url = `${API}/stream?access_token=${encodeURIComponent(token)}`;
    const source = new EventSource(url);
    this.source = source;
    this.onState("connecting");
    source.onopen = () => {
      if (this.source === source) this.onState("connected");
    };
    source.addEventListener("alert", (event) => {
      if (this.source !== source) return;
      let alert;
      try {
        alert = JSON.parse(event.data);
      } catch {
        return;
      }
      if (alert && typeof alert.alert_id === "string") this.onAlert(alert);
    });
    source.onerror = () => {
      if (this.source !== source) return;
      if (source.readyState === EventSource.CLOSED) {
        this.onState("closed");
        this.onClosed();
      } else {
        this.onState("reconnecting");
      }
    };
  }

  reopenLater(ms) {
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.open(), ms);
  }

  close() {
    clearTimeout(this.retry);
    if (this.source) {
      this.source.close();
      this.source = null;
    }
  }
}
