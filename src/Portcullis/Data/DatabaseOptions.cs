using Microsoft.Extensions.Options;

namespace Portcullis.Data;

internal sealed class DatabaseOptions
{
    public const string Section = "Database";

    /// <summary><c>sqlite</c> (embedded, default) or <c>postgres</c>.</summary>
    public string Provider { get; set; } = "sqlite";

    /// <summary>Required for postgres; for sqlite it defaults to <c>DATA_DIR/portcullis.db</c>.</summary>
    public string? ConnectionString { get; set; }

    public bool IsPostgres => string.Equals(Provider, "postgres", StringComparison.OrdinalIgnoreCase);
}

/// <summary>Checks these settings at start; every problem names the key and the fix (docs/configuration.md).</summary>
internal sealed class DatabaseOptionsValidator : IValidateOptions<DatabaseOptions>
{
    public ValidateOptionsResult Validate(string? name, DatabaseOptions o)
    {
        var errors = new List<string>();
        if (!string.Equals(o.Provider, "sqlite", StringComparison.OrdinalIgnoreCase) && !o.IsPostgres)
            errors.Add($"Database:Provider is '{o.Provider}'. Set it to 'sqlite' (the embedded default) or 'postgres'.");
        if (o.IsPostgres && string.IsNullOrWhiteSpace(o.ConnectionString))
            errors.Add("Database:ConnectionString is required when Database:Provider is 'postgres'. Set it to e.g. 'Host=127.0.0.1;Port=5432;Database=portcullis;Username=portcullis;Password=...'.");
        return Result(errors);
    }

    private static ValidateOptionsResult Result(List<string> errors) =>
        errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
}
