//! The OpenAPI 3.1 document of the admin API. The end-to-end suite calls every operation it
//! lists, so an operation documented here and not mounted fails a test.

use serde_json::{Value, json};

/// The document served at `/api/v1/mesh/v2/openapi.json`.
pub fn document() -> Value {
    let error = json!({ "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let ok = |description: &str, schema: &str| json!({ "description": description, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
    let body = |schema: &str, example: Value| json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") }, "example": example } } });
    let text = |description: &str| json!({ "description": description, "content": { "text/plain": {} } });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "wasmesh admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Service registration, discovery, invocation, health and topology, plus metrics and status. When `admin.token` is set every request needs `Authorization: Bearer <token>`.",
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["status", "message"], "properties": { "status": { "const": "error" }, "message": { "type": "string" } } },
                "HealthCheck": {
                    "type": "object",
                    "properties": {
                        "kind": { "enum": ["http", "tcp"] }, "path": { "type": "string" }, "method": { "type": "string" },
                        "interval": { "type": "string", "examples": ["5s"] }, "timeout": { "type": "string" },
                        "healthy_threshold": { "type": "integer" }, "unhealthy_threshold": { "type": "integer" },
                        "expected_statuses": { "type": "array", "items": { "type": "array", "items": { "type": "integer" } } }
                    }
                },
                "Register": {
                    "type": "object", "required": ["service_name", "address", "port"],
                    "properties": {
                        "service_name": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$" },
                        "address": { "type": "string" }, "port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                        "tags": { "type": "array", "items": { "type": "string" } },
                        "metadata": { "type": "object", "additionalProperties": { "type": "string" } },
                        "weight": { "type": "integer", "minimum": 1, "maximum": 10000 },
                        "health_check": { "$ref": "#/components/schemas/HealthCheck" },
                        "ttl_seconds": { "type": "integer", "minimum": 1, "description": "Expires unless registered again within this many seconds." }
                    }
                },
                "Registered": { "type": "object", "properties": { "service_id": { "type": "string" }, "status": { "const": "registered" }, "message": { "type": "string" } } },
                "Deregister": { "type": "object", "properties": { "service_id": { "type": "string" }, "service_name": { "type": "string" }, "address": { "type": "string" }, "port": { "type": "integer" } } },
                "Deregistered": { "type": "object", "properties": { "service_id": { "type": "string" }, "status": { "const": "deregistered" }, "message": { "type": "string" } } },
                "Instance": {
                    "type": "object",
                    "properties": {
                        "service_id": { "type": "string" }, "endpoint": { "type": "string" }, "address": { "type": "string" }, "port": { "type": "integer" },
                        "weight": { "type": "integer" }, "metadata": { "type": "object" }, "tags": { "type": "array" },
                        "source": { "enum": ["registry", "config"] },
                        "health": { "enum": ["unknown", "healthy", "unhealthy", "unchecked"] },
                        "ejected": { "type": "boolean" }, "routable": { "type": "boolean" }, "in_flight": { "type": "integer" }
                    }
                },
                "Discovery": { "type": "object", "properties": { "service_name": { "type": "string" }, "instances": { "type": "array", "items": { "$ref": "#/components/schemas/Instance" } } } },
                "Services": { "type": "object", "properties": { "services": { "type": "array" } } },
                "Call": {
                    "type": "object", "required": ["service_name", "path"],
                    "properties": {
                        "service_name": { "type": "string" }, "method": { "type": "string", "default": "GET" }, "path": { "type": "string" },
                        "headers": { "type": "object", "additionalProperties": { "type": "string" } },
                        "body": { "type": "string" }, "timeout_ms": { "type": "integer" }
                    }
                },
                "CallResult": {
                    "type": "object",
                    "properties": {
                        "service_name": { "type": "string" }, "status": { "type": "integer" }, "headers": { "type": "object" },
                        "body": { "type": "string" }, "body_base64": { "type": "string" }, "duration_ms": { "type": "number" }
                    }
                },
                "Breaker": { "description": "The failure-rate breaker; `disabled` when turned off with `enabled = false`", "enum": ["closed", "open", "half_open", "disabled"] },
                "Health": {
                    "type": "object",
                    "properties": {
                        "status": { "enum": ["healthy", "degraded"] }, "registries": { "type": "array" },
                        "services": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": { "type": "string" }, "status": { "enum": ["up", "degraded", "down"] },
                                    "breaker": { "$ref": "#/components/schemas/Breaker" }, "in_flight": { "type": "integer" },
                                    "instances": { "type": "array" }
                                }
                            }
                        }
                    }
                },
                "Topology": {
                    "type": "object",
                    "properties": {
                        "services": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": { "type": "string" }, "breaker": { "$ref": "#/components/schemas/Breaker" },
                                    "instances": { "type": "array" }
                                }
                            }
                        },
                        "routes": { "type": "array" }, "edges": { "type": "array" }
                    }
                },
                "Reload": { "type": "object", "properties": { "status": { "enum": ["applied", "unchanged", "rejected"] }, "version": { "type": "integer" }, "error": { "type": "string" } } }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/api/v1/mesh/v2/register": {
                "post": {
                    "summary": "Register (or renew) a service instance",
                    "requestBody": body("Register", json!({ "service_name": "users", "address": "127.0.0.1", "port": 9001, "tags": ["v1"], "ttl_seconds": 30 })),
                    "responses": { "200": ok("Registered", "Registered"), "400": error.clone(), "503": error.clone() }
                }
            },
            "/api/v1/mesh/v2/register/{service_id}": {
                "delete": {
                    "summary": "Deregister an instance by id",
                    "parameters": [{ "name": "service_id", "in": "path", "required": true, "schema": { "type": "string" }, "example": "users-127.0.0.1-9001" }],
                    "responses": { "200": ok("Deregistered", "Deregistered"), "404": error.clone() }
                }
            },
            "/api/v1/mesh/v2/deregister": {
                "post": {
                    "summary": "Deregister an instance by id, or by service name, address and port",
                    "requestBody": body("Deregister", json!({ "service_id": "users-127.0.0.1-9001" })),
                    "responses": { "200": ok("Deregistered", "Deregistered"), "400": error.clone(), "404": error.clone() }
                }
            },
            "/api/v1/mesh/v2/discover/{service_name}": {
                "get": {
                    "summary": "A service's instances with their health, weight and metadata",
                    "parameters": [{ "name": "service_name", "in": "path", "required": true, "schema": { "type": "string" }, "example": "users" }],
                    "responses": { "200": ok("Instances", "Discovery"), "404": error.clone() }
                }
            },
            "/api/v1/mesh/v2/services": {
                "get": { "summary": "Every known service", "responses": { "200": ok("Services", "Services") } }
            },
            "/api/v1/mesh/v2/call": {
                "post": {
                    "summary": "Call a service by name through the data plane",
                    "requestBody": body("Call", json!({ "service_name": "users", "method": "GET", "path": "/echo", "timeout_ms": 2000 })),
                    "responses": { "200": ok("The service's answer", "CallResult"), "400": error.clone(), "404": error.clone(), "504": error.clone() }
                }
            },
            "/api/v1/mesh/v2/health": {
                "get": { "summary": "Every service and instance with its state, breakers and registry connectivity", "responses": { "200": ok("Health", "Health") } }
            },
            "/api/v1/mesh/v2/topology": {
                "get": { "summary": "Services, instances and the call edges observed in live traffic", "responses": { "200": ok("Topology", "Topology") } }
            },
            "/api/v1/mesh/v2/openapi.json": {
                "get": { "summary": "This document", "responses": { "200": { "description": "OpenAPI 3.1", "content": { "application/json": {} } } } }
            },
            "/metrics": { "get": { "summary": "Prometheus metrics (OpenMetrics text)", "responses": { "200": text("Metrics") } } },
            "/ready": { "get": { "summary": "Readiness", "responses": { "200": text("Ready") } } },
            "/config": { "get": { "summary": "The configuration in force: version, sources and their hashes, last reload error", "responses": { "200": { "description": "Config status", "content": { "application/json": {} } } } } },
            "/reload": { "post": { "summary": "Reload the configuration file and plugins now", "responses": { "200": ok("Applied or unchanged", "Reload"), "409": error.clone(), "422": ok("Refused; the previous configuration keeps serving", "Reload") } } },
            "/upstreams": { "get": { "summary": "Every service's breaker and endpoints' health, ejection and load", "responses": { "200": { "description": "Upstreams", "content": { "application/json": {} } } } } }
        }
    })
}
