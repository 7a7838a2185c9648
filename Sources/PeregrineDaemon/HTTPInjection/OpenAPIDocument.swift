/// The OpenAPI 3 description of the HTTP injection API, served at
/// `GET /api/v1/openapi.json`. A Swift string rather than a bundled resource:
/// the daemon is one binary with nothing to install beside it. Tests validate
/// it with openapi-spec-validator and check real responses against it.
enum OpenAPIDocument {
    static let bytes: [UInt8] = Array(text.utf8)

    static let text = #"""
{
  "openapi": "3.0.3",
  "info": {
    "title": "Peregrine HTTP injection API",
    "version": "1.0.0",
    "description": "Queue mail through Peregrine over HTTP. A 200 answer is sent only after every queued message is on disk (fsync), as SMTP's 250 is. On any error nothing is queued, except a 503 spool_unavailable in the middle of a batch, whose body lists which recipients were committed."
  },
  "servers": [{"url": "/"}],
  "components": {
    "securitySchemes": {
      "bearer": {"type": "http", "scheme": "bearer", "description": "KEYNAME:SECRET of an <api-key> block."},
      "basic": {"type": "http", "scheme": "basic", "description": "User KEYNAME, password SECRET."}
    },
    "headers": {
      "RetryAfter": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 1}}
    },
    "schemas": {
      "Mailbox": {
        "oneOf": [
          {"type": "string", "description": "a@b.example or Display Name <a@b.example>"},
          {"type": "object", "required": ["email"], "additionalProperties": false,
           "properties": {"email": {"type": "string"}, "name": {"type": "string"}}}
        ]
      },
      "Recipient": {
        "oneOf": [
          {"type": "string", "description": "An email address."},
          {"type": "object", "required": ["email"], "additionalProperties": false,
           "properties": {
             "email": {"type": "string"},
             "substitutions": {"type": "object", "description": "{{name}} in subject, text, html, header values and raw is replaced by the value. A recipient with substitutions gets a message of its own.",
                               "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}]}}
           }}
        ]
      },
      "Attachment": {
        "type": "object", "required": ["filename", "content"], "additionalProperties": false,
        "properties": {
          "filename": {"type": "string", "minLength": 1, "maxLength": 255},
          "content_type": {"type": "string", "default": "application/octet-stream"},
          "content": {"type": "string", "format": "byte", "description": "Standard base64."},
          "content_id": {"type": "string", "description": "Makes the part inline, referred to as cid:ID."}
        }
      },
      "Content": {
        "type": "object", "required": ["from"], "additionalProperties": false,
        "description": "Structured content; Peregrine builds the MIME message. At least one of text and html. Without 'to', each recipient gets its own message with To: that recipient.",
        "properties": {
          "from": {"$ref": "#/components/schemas/Mailbox"},
          "to": {"oneOf": [{"$ref": "#/components/schemas/Mailbox"}, {"type": "array", "items": {"$ref": "#/components/schemas/Mailbox"}}]},
          "cc": {"oneOf": [{"$ref": "#/components/schemas/Mailbox"}, {"type": "array", "items": {"$ref": "#/components/schemas/Mailbox"}}]},
          "reply_to": {"$ref": "#/components/schemas/Mailbox"},
          "subject": {"type": "string"},
          "text": {"type": "string"},
          "html": {"type": "string"},
          "headers": {"type": "object", "additionalProperties": {"type": "string"}},
          "attachments": {"type": "array", "items": {"$ref": "#/components/schemas/Attachment"}}
        }
      },
      "MessageRequest": {
        "type": "object", "required": ["sender", "recipients"], "additionalProperties": false,
        "description": "Exactly one of raw and content.",
        "properties": {
          "sender": {"type": "string", "description": "The envelope sender (MAIL FROM)."},
          "recipients": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Recipient"}},
          "raw": {"type": "string", "description": "A complete RFC 5322 message (LF or CRLF line ends, lines of at most 998 octets)."},
          "content": {"$ref": "#/components/schemas/Content"},
          "job_id": {"type": "string", "maxLength": 128, "description": "Goes into the X-Job header and the accounting records' jobId."},
          "campaign": {"type": "string", "maxLength": 128, "description": "Added as X-Campaign-ID."},
          "tenant": {"type": "string", "maxLength": 128, "description": "Added as X-Tenant-ID; the suppression scope (the tenant's entries, then the global ones). A key with its own tenant sets it; naming another gets 403 tenant_not_allowed."},
          "virtual_mta": {"type": "string", "description": "A <virtual-mta> or <virtual-mta-pool>; default the key's default-virtual-mta."},
          "dkim": {"type": "boolean", "description": "false: do not DKIM-sign. Default: sign as configured."}
        }
      },
      "RecipientResult": {
        "type": "object", "required": ["recipient", "status"], "additionalProperties": false,
        "properties": {
          "recipient": {"type": "string"},
          "status": {"type": "string", "enum": ["queued", "rejected", "failed"]},
          "message_id": {"type": "string", "description": "The spool id, as in SMTP's 250 and the accounting file's msgid."},
          "reason": {"type": "string", "description": "Why a recipient was rejected (e.g. suppressed) or failed."}
        }
      },
      "MessageResponse": {
        "type": "object", "required": ["queued", "rejected", "recipients"], "additionalProperties": false,
        "properties": {
          "error": {"$ref": "#/components/schemas/ErrorBody"},
          "queued": {"type": "integer", "minimum": 0},
          "rejected": {"type": "integer", "minimum": 0},
          "recipients": {"type": "array", "items": {"$ref": "#/components/schemas/RecipientResult"}}
        }
      },
      "ErrorBody": {
        "type": "object", "required": ["code", "message"], "additionalProperties": false,
        "properties": {
          "code": {"type": "string", "enum": ["invalid_json", "invalid_type", "missing_field", "unknown_field", "invalid_field",
                                               "conflicting_fields", "invalid_address", "invalid_base64", "too_many_recipients",
                                               "unauthorized", "locked_out", "too_many_attempts", "sender_not_allowed",
                                               "message_too_large", "request_too_large", "unsupported_media_type",
                                               "unknown_virtual_mta", "dkim_refused", "rate_limited", "spool_unavailable",
                                               "shutting_down", "not_found", "method_not_allowed", "bad_request",
                                               "headers_too_large", "uri_too_long", "not_implemented",
                                               "http_version_not_supported"]},
          "message": {"type": "string"},
          "field": {"type": "string", "description": "The request field at fault, e.g. recipients[2].email."},
          "offset": {"type": "integer", "description": "Byte offset of a JSON syntax error."}
        }
      },
      "Error": {
        "type": "object", "required": ["error"], "additionalProperties": false,
        "properties": {"error": {"$ref": "#/components/schemas/ErrorBody"}}
      }
    }
  },
  "paths": {
    "/api/v1/messages": {
      "post": {
        "operationId": "sendMessages",
        "summary": "Queue one message, or one per recipient",
        "security": [{"bearer": []}, {"basic": []}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessageRequest"}}}},
        "responses": {
          "200": {"description": "Committed to the spool.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessageResponse"}}}},
          "400": {"description": "Not JSON (with the byte offset) or malformed HTTP.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "401": {"description": "No or wrong API key.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "403": {"description": "The key may not send as this sender.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "413": {"description": "Request over http-injection-max-request-size, or a message over the key's max-message-size.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "415": {"description": "Not application/json.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "422": {"description": "A field is missing, of the wrong type or invalid; 'field' names it.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "429": {"description": "The key's max-msg-rate, or too many failed logins from this address.", "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "503": {"description": "The spool cannot take messages (or the server is shutting down).", "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}, "content": {"application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/Error"}, {"$ref": "#/components/schemas/MessageResponse"}]}}}}
        }
      }
    },
    "/api/v1/openapi.json": {
      "get": {
        "operationId": "openapi",
        "summary": "This document",
        "security": [],
        "responses": {"200": {"description": "The OpenAPI document.", "content": {"application/json": {"schema": {"type": "object"}}}}}
      }
    }
  }
}
"""#
}
