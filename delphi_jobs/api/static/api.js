// The dashboard's only way to the server: the same HTTP API as every other client.
// The API token (when the server asks for one) lives in sessionStorage: this tab only, gone when it
// closes, never in a cookie, so no other site can make the browser send it. The operator's name is
// remembered across visits and sent as X-Delphi-Operator with every call.

const TOKEN = "delphi-jobs.token";
const OPERATOR = "delphi-jobs.operator";

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "error";
    this.hint = error.hint || null;
    this.retryable = Boolean(error.retryable);
    this.allowed = error.allowed || null;
    this.field = error.field || null;
  }
}

export const identity = {
  get token() {
    return sessionStorage.getItem(TOKEN) || "";
  },
  get operator() {
    return localStorage.getItem(OPERATOR) || "";
  },
  save(operator, token) {
    if (operator) localStorage.setItem(OPERATOR, operator);
    else localStorage.removeItem(OPERATOR);
    if (token) sessionStorage.setItem(TOKEN, token);
  },
};

export async function call(method, path, { query, body } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json" };
  if (identity.token) headers.Authorization = `Bearer ${identity.token}`;
  if (identity.operator) headers["X-Delphi-Operator"] = identity.operator;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, { code: "network", message: `the server did not answer (${err.message})`, retryable: true });
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.error || { message: `HTTP ${response.status}` });
  return { status: response.status, data };
}

export const api = {
  stats: () => call("GET", "/stats").then((r) => r.data),
  jobs: (query) => call("GET", "/jobs", { query }).then((r) => r.data),
  job: (id) => call("GET", `/jobs/${encodeURIComponent(id)}`).then((r) => r.data),
  report: (id, run) => call("GET", `/reports/${encodeURIComponent(id)}`, { query: { run } }).then((r) => r.data),
  act(action, id, reason) {
    const path = `/jobs/${encodeURIComponent(id)}`;
    if (action === "cancel") return call("DELETE", path, { query: { reason } });
    return call("POST", `${path}/${action}`, { body: reason ? { reason } : {} });
  },
};
