using System.Diagnostics;

namespace Portcullis.Tests.Infrastructure;

/// <summary>
/// A private PostgreSQL cluster that a test may stop and start (the shared one of test.sh must stay
/// up). Built from Debian's binaries (package <c>postgresql</c>), with trust authentication on
/// loopback; as root it runs as the <c>postgres</c> system user, since PostgreSQL refuses root.
/// </summary>
public sealed class PostgresCluster : IAsyncDisposable
{
    private readonly string _bin;
    private readonly string _dir;
    private readonly bool _asPostgres;

    private PostgresCluster(string bin, string dir, int port, bool asPostgres)
    {
        _bin = bin;
        _dir = dir;
        Port = port;
        _asPostgres = asPostgres;
    }

    public int Port { get; }

    public string ConnectionString => $"Host=127.0.0.1;Port={Port};Username=portcullis;Database=portcullis;Timeout=3;Command Timeout=5";

    public static async Task<PostgresCluster> StartAsync()
    {
        var bin = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")).Where(d => File.Exists(Path.Combine(d, "pg_ctl")))
                .OrderByDescending(d => d, StringComparer.Ordinal).FirstOrDefault()
            : null;
        if (bin is null)
            Assert.Fail("PostgreSQL's server binaries are missing (/usr/lib/postgresql/*/bin/pg_ctl). Install the Debian package 'postgresql' (test.sh does).");
        var asPostgres = Environment.UserName == "root";
        var dir = Directory.CreateTempSubdirectory("portcullis-pg-").FullName;
        if (asPostgres)
            await RunAsync("chown", "postgres:", dir);
        var cluster = new PostgresCluster(bin!, dir, PortcullisServer.FreePort(), asPostgres);
        await cluster.PgAsync("initdb", "-D", cluster.Data, "-U", "portcullis", "-A", "trust", "-E", "UTF8", "--no-locale");
        await File.AppendAllTextAsync(Path.Combine(cluster.Data, "postgresql.conf"),
            $"\nlisten_addresses = '127.0.0.1'\nport = {cluster.Port}\nunix_socket_directories = '{dir}'\nshared_buffers = 32MB\n");
        await cluster.StartServerAsync();
        await cluster.PgAsync("createdb", "-h", "127.0.0.1", "-p", cluster.Port.ToString(), "-U", "portcullis", "portcullis");
        return cluster;
    }

    private string Data => Path.Combine(_dir, "data");

    public Task StartServerAsync() => PgAsync("pg_ctl", "start", "-w", "-D", Data, "-l", Path.Combine(_dir, "log"));

    /// <summary>Stops the server at once, as a crash or a lost network would: connections break mid-request.</summary>
    public Task StopServerAsync() => PgAsync("pg_ctl", "stop", "-w", "-m", "immediate", "-D", Data);

    private Task PgAsync(string tool, params string[] args) =>
        _asPostgres ? RunAsync("runuser", ["-u", "postgres", "--", Path.Combine(_bin, tool), .. args]) : RunAsync(Path.Combine(_bin, tool), args);

    private static async Task RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = "/tmp" };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, $"{file} {string.Join(' ', args)} failed ({process.ExitCode}): {await stdout}{await stderr}");
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await PgAsync("pg_ctl", "stop", "-m", "immediate", "-D", Data);
        }
        catch (Exception)
        {
            // Already stopped.
        }
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
