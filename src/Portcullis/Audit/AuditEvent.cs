namespace Portcullis.Audit;

/// <summary>One security event. Never holds a secret: tokens appear only by id and hint.</summary>
internal sealed class AuditEvent
{
    public long Id { get; set; }
    public DateTime OccurredAt { get; set; }
    public required string Event { get; set; }
    public string? Actor { get; set; }
    public long? ActorId { get; set; }
    public string? Subject { get; set; }
    public long? SubjectId { get; set; }
    public string? TokenId { get; set; }
    public string? ClientIp { get; set; }
    public string? Details { get; set; }

    /// <summary>Set for an event webhooks may want, until the webhook dispatcher has fanned it out (Notifications/).</summary>
    public bool? Notify { get; set; }
}
