// Starts Swagger UI on the API's own document. Kept out of index.html so the
// page runs under a Content-Security-Policy without 'unsafe-inline' scripts.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Never send the document to a remote validator.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // "Try it out" uses the browser's session cookie; same-origin requests
    // carry an Origin header, which satisfies the CSRF check.
    withCredentials: true,
  });
});
