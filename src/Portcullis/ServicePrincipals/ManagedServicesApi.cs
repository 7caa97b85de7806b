using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Portcullis.Auth;

namespace Portcullis.ServicePrincipals;

/// <summary><c>GET /api/v1/managed-services</c> (admin): the processes of docs/services.md and how they fare.</summary>
internal static class ManagedServicesApi
{
    /// <summary>Service principals from the configuration (docs/services.md), and the processes Portcullis runs for them.</summary>
    public static IServiceCollection AddManagedServices(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<ServicesOptions>().Configure(o => ServicesConfiguration.Bind(configuration, o, o.BindingErrors)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<ServicesOptions>, ServicesOptionsValidator>();
        services.AddSingleton<ServiceSync>();
        services.AddSingleton<ManagedProcesses>();
        services.AddHostedService(sp => sp.GetRequiredService<ManagedProcesses>());
        return services;
    }

    public static RouteGroupBuilder MapManagedServices(this RouteGroupBuilder api)
    {
        var group = api.MapGroup("/managed-services").WithTags("Services").RequireAuthorization(Policies.Admin);
        group.MapGet("/", (ManagedProcesses processes) => TypedResults.Ok(processes.States));
        return group;
    }
}
