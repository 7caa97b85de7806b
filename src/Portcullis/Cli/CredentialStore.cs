using System.Text.Json;
using System.Text.Json.Serialization;

namespace Portcullis.Cli;

/// <summary>One server the CLI knows: its URL, who logged in, and the credential (a CLI JWT or an API token).</summary>
internal sealed class CliContext
{
    public required string Name { get; set; }
    public required string Endpoint { get; set; }
    public string? Username { get; set; }
    public string? ApiToken { get; set; }
}

internal sealed class CliConfig
{
    public string? Current { get; set; }
    public List<CliContext> Contexts { get; set; } = [];

    public CliContext? Find(string name) => Contexts.FirstOrDefault(c => c.Name == name);
}

/// <summary>
/// The stored contexts (docs/cli.md): <c>$PORTCULLIS_CONFIG_DIR</c> or <c>~/.config/portcullis/</c>, file
/// <c>credentials.json</c> with mode 0600 in a 0700 directory (looser permissions are repaired), replaced
/// atomically (a temporary file, flushed to disk, then renamed over it), and changed under a lock file so
/// that two CLI runs at once do not lose each other's changes.
/// </summary>
internal sealed class CredentialStore
{
    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public string Directory { get; }
    public string FilePath => Path.Combine(Directory, "credentials.json");
    private string LockPath => Path.Combine(Directory, "credentials.lock");

    public CredentialStore()
    {
        Directory = Environment.GetEnvironmentVariable("PORTCULLIS_CONFIG_DIR") is { Length: > 0 } dir
            ? Path.GetFullPath(dir)
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".config", "portcullis");
    }

    public CliConfig Load()
    {
        if (!File.Exists(FilePath))
            return new CliConfig();
        Secure();
        try
        {
            return JsonSerializer.Deserialize<CliConfig>(File.ReadAllText(FilePath), Json) ?? new CliConfig();
        }
        catch (JsonException)
        {
            throw new CliException($"{FilePath} is damaged. Move it away and log in again with `portcullis login`.");
        }
    }

    /// <summary>Reads, changes and writes the contexts under the lock.</summary>
    public T Update<T>(Func<CliConfig, T> change)
    {
        System.IO.Directory.CreateDirectory(Directory);
        Secure();
        using var gate = AcquireLock();
        var config = Load();
        var result = change(config);
        Write(config);
        return result;
    }

    private FileStream AcquireLock()
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            try
            {
                return new FileStream(LockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(20);
            }
            catch (IOException)
            {
                throw new CliException($"Another portcullis command holds {LockPath}. Try again, or delete the file if no command is running.");
            }
        }
    }

    private void Write(CliConfig config)
    {
        var temp = Path.Combine(Directory, $".credentials.{Environment.ProcessId}.tmp");
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var stream = new FileStream(temp, options))
        {
            JsonSerializer.Serialize(stream, config, Json);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temp, FilePath, overwrite: true);
    }

    /// <summary>0700 for the directory, 0600 for the file, whatever they were.</summary>
    private void Secure()
    {
        if (OperatingSystem.IsWindows())
            return;
        if (System.IO.Directory.Exists(Directory))
            File.SetUnixFileMode(Directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        if (File.Exists(FilePath))
            File.SetUnixFileMode(FilePath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }
}

/// <summary>An expected failure: its message is what the user reads (exit 1, or 2 for usage).</summary>
internal class CliException(string message, int exitCode = 1) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}
